//! Headless Chromium for tests of pages (pg-report's HTML): a screenshot, the DOM after the
//! page loaded, and the laid-out size of every `<svg>`.
//!
//! Debian's `chromium` (installed by `make setup`) is run once per question, as root too, so
//! with `--no-sandbox`, a fresh profile directory and everything that would reach the network
//! (updates, sync, field trials) switched off. A test that finds no browser calls
//! [`crate::skip!`], which fails under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A Chromium binary.
#[derive(Debug, Clone)]
pub struct Browser {
    bin: PathBuf,
}

/// What the page looked like to the browser.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The DOM after load (`--dump-dom`), of the page as it was given.
    pub dom: String,
    /// Every `<svg>` in document order: the `data-chart` of its nearest ancestor that has one
    /// (or ""), and its laid-out width and height in CSS pixels.
    pub svgs: Vec<(String, f64, f64)>,
}

/// The probe appended to a copy of the page to measure it (the page itself has no script).
const PROBE: &str = r#"<pre id="testkit-measure"></pre><script>
document.getElementById("testkit-measure").textContent = Array.from(document.querySelectorAll("svg"))
  .filter(s => !s.parentElement.closest("svg"))
  .map(s => { const r = s.getBoundingClientRect(); const f = s.closest("[data-chart]");
              return (f ? f.getAttribute("data-chart") : "") + " " + r.width + " " + r.height; })
  .join("\n");
</script>"#;

impl Browser {
    /// `$CHROMIUM`, else `chromium` or `chromium-browser` on the PATH; None if there is none.
    pub fn find() -> Option<Browser> {
        let candidates: Vec<PathBuf> = match std::env::var_os("CHROMIUM") {
            Some(p) => vec![PathBuf::from(p)],
            None => std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
                .collect(),
        };
        candidates
            .into_iter()
            .find(|p| p.is_file())
            .map(|bin| Browser { bin })
    }

    /// The command with the flags every run needs; `profile` is a new empty directory.
    fn command(&self, profile: &Path, window: (u32, u32)) -> Command {
        // `timeout`: a hung browser fails the test in a minute rather than at nextest's limit.
        let mut cmd = Command::new("timeout");
        cmd.arg("120").arg(&self.bin).args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ]);
        cmd.arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--window-size={},{}", window.0, window.1));
        cmd
    }

    fn run(&self, mut cmd: Command) -> Vec<u8> {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Load `page` (an HTML file) and return its DOM, and the sizes of its SVGs measured in a
    /// copy with a probe script appended. `work` is a scratch directory (profiles, the copy).
    pub fn render(&self, page: &Path, work: &Path, window: (u32, u32)) -> Rendered {
        let page = page.canonicalize().expect("the page exists");
        let mut cmd = self.command(&fresh(work, "profile-dom"), window);
        cmd.arg("--dump-dom").arg(url(&page));
        let dom = String::from_utf8(self.run(cmd)).expect("the DOM is UTF-8");

        let html = std::fs::read_to_string(&page).expect("read the page");
        let probed = match html.rfind("</body>") {
            Some(i) => format!("{}{PROBE}{}", &html[..i], &html[i..]),
            None => format!("{html}{PROBE}"),
        };
        let copy = work.join("probed.html");
        std::fs::write(&copy, probed).expect("write the probed copy");
        let mut cmd = self.command(&fresh(work, "profile-probe"), window);
        cmd.arg("--dump-dom").arg(url(&copy));
        let probed_dom = String::from_utf8(self.run(cmd)).expect("the DOM is UTF-8");
        let start = probed_dom
            .find(r#"<pre id="testkit-measure">"#)
            .expect("the probe ran")
            + r#"<pre id="testkit-measure">"#.len();
        let end = start + probed_dom[start..].find("</pre>").expect("probe end");
        let svgs = probed_dom[start..end]
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let parts: Vec<&str> = l.split(' ').collect();
                let n = parts.len();
                (
                    parts[..n - 2].join(" "),
                    parts[n - 2].parse().expect("width"),
                    parts[n - 1].parse().expect("height"),
                )
            })
            .collect();
        Rendered { dom, svgs }
    }

    /// A screenshot of `page` at `window` size into `png`.
    pub fn screenshot(&self, page: &Path, png: &Path, work: &Path, window: (u32, u32)) {
        let page = page.canonicalize().expect("the page exists");
        let mut cmd = self.command(&fresh(work, "profile-shot"), window);
        cmd.arg(format!("--screenshot={}", png.display()))
            .arg(url(&page));
        self.run(cmd);
    }
}

fn url(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// A new empty directory `work/name-N`.
fn fresh(work: &Path, name: &str) -> PathBuf {
    for n in 0.. {
        let d = work.join(format!("{name}-{n}"));
        if std::fs::create_dir(&d).is_ok() {
            return d;
        }
    }
    unreachable!()
}

/// Undo HTML escaping as a browser serialises text and attributes.
pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// Every element with a `data-field` attribute in `dom`: the attribute and the element's text
/// (both unescaped). The elements must hold text only.
pub fn data_fields(dom: &str) -> Vec<(String, String)> {
    let key = "data-field=\"";
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find(key) {
        rest = &rest[i + key.len()..];
        let end = rest.find('"').expect("attribute end");
        let field = unescape(&rest[..end]);
        let open = rest.find('>').expect("tag end") + 1;
        let close = open + rest[open..].find('<').expect("element end");
        out.push((field, unescape(&rest[open..close])));
        rest = &rest[close..];
    }
    out
}

/// Width and height of a PNG (from its IHDR chunk); None if `bytes` is not a PNG.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&bytes[16..20]), be(&bytes[20..24])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_fields_are_read_and_unescaped() {
        let dom = r#"<td><span class="v" data-field="summary:/verdict">equal</span></td><span data-field="proof.0:/name">a &amp; &lt;b&gt;</span>"#;
        assert_eq!(
            data_fields(dom),
            [
                ("summary:/verdict".into(), "equal".into()),
                ("proof.0:/name".into(), "a & <b>".into())
            ]
        );
    }

    #[test]
    fn png_size_reads_ihdr() {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        b.extend_from_slice(&1280u32.to_be_bytes());
        b.extend_from_slice(&2000u32.to_be_bytes());
        assert_eq!(png_size(&b), Some((1280, 2000)));
        assert_eq!(png_size(b"GIF89a"), None);
    }
}

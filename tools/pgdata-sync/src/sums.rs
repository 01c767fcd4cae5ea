//! `pgdata-sync sums DIR`: one `file_sums` record per file of the copy (size and block
//! hashes), on the target, before `send` decides what to send.

use std::fs::File;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use shared::{ErrorKind, ResultExt, Status};

use crate::tree;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The partial copy (a data directory no server runs in).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The unit of comparison: a multiple of 8k (PostgreSQL's page) up to 1M, e.g. 8k, 128k.
    /// Smaller finds more of a copy that changed here and there since; each block costs 16
    /// bytes of sums.
    #[arg(long, value_name = "SIZE", default_value = "8k", value_parser = parse_block_size)]
    block_size: usize,
}

/// A block size ([`shared::cli::parse_size`]): a multiple of 8192 from 8k to 1M.
fn parse_block_size(s: &str) -> Result<usize, String> {
    let size = shared::cli::parse_size(s)?;
    if !size.is_multiple_of(8192) || !(8192..=1024 * 1024).contains(&size) {
        return Err(format!("{s:?}: a multiple of 8k from 8k to 1M"));
    }
    Ok(size as usize)
}

/// A file of the copy: its size and the hash of each block, hex, one after the other.
#[derive(Debug, Serialize, Deserialize)]
pub struct FileSums {
    pub path: String,
    pub size: u64,
    pub block_size: u32,
    pub sums: String,
}

impl shared::Record for FileSums {
    const TYPE: &'static str = "file_sums";
}

/// A directory of the copy (so that one the source no longer has is removed).
#[derive(Debug, Serialize, Deserialize)]
pub struct DirEntry {
    pub path: String,
}

impl shared::Record for DirEntry {
    const TYPE: &'static str = "dir_entry";
}

pub fn run(args: Args) -> anyhow::Result<Status> {
    let mut out = shared::Output::stdout();
    crate::not_running(&args.dir, "a copy into it")?;
    // This run owns the copy from now on; an older run's apply stops at its next write.
    let _lock = crate::lock(&args.dir)?;
    let token = format!("{:032x}", rand::random::<u128>());
    let token_path = args.dir.join(crate::TOKEN_FILE);
    std::fs::write(&token_path, format!("{token}\n"))
        .and_then(|()| std::fs::File::open(&token_path)?.sync_all())
        .with_kind_context(ErrorKind::Io, || {
            format!("cannot write {}", token_path.display())
        })?;
    let block = args.block_size;
    let mut buf = vec![0u8; block];
    let (mut files, mut bytes) = (0u64, 0u64);
    for e in tree::walk(&args.dir)? {
        if e.dir {
            out.emit(&DirEntry { path: e.path })?;
            continue;
        }
        let p = args.dir.join(&e.path);
        let mut f = match File::open(&p) {
            Ok(f) => f,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => {
                return Err(err)
                    .with_kind_context(ErrorKind::Io, || format!("cannot open {}", p.display()))
            }
        };
        let mut sums = String::with_capacity((e.size as usize / block + 1) * 32);
        let mut size = 0u64;
        loop {
            let n = crate::read_block(&mut f, &mut buf)
                .with_kind_context(ErrorKind::Io, || format!("cannot read {}", p.display()))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            sums.push_str(&hex::encode(crate::block_hash(&buf[..n])));
            if n < block {
                break;
            }
        }
        files += 1;
        bytes += size;
        out.emit(&FileSums {
            path: e.path,
            size,
            block_size: block as u32,
            sums,
        })?;
    }
    out.finish(&serde_json::json!({"files": files, "bytes": bytes, "token": token}))
}

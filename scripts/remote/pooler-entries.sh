# pgshift-pooler-entries FILE OLD_HOST OLD_PORT NEW_HOST NEW_PORT [check|stage]
# Point every [databases] entry of a PgBouncer configuration FILE (and the files it pulls in
# with %include, whose entries belong to the section in force at the %include line) that
# connects to OLD_HOST:OLD_PORT (port 5432 when the entry names none) at NEW_HOST:NEW_PORT.
# Each changed file is written beside itself and renamed over it (atomic), the old one kept
# as FILE.pgshift-prev (for a rollback, and for a person). With `check` nothing is written.
# With `stage` each changed file is only written beside itself as FILE.pgshift-next, with the
# current one as FILE.pgshift-base, and listed in TOP.pgshift-staged (TOP: the FILE argument):
# pooler-swap.sh puts them in place later in one quick step (or finds a file edited since).
# Prints one line per file that holds such entries: "FILE<TAB>COUNT<TAB>NAME,NAME". Runs as
# the owner of the files (the server's user); exit 1 if FILE cannot be read or written.
file=$1 oh=$2 op=$3 nh=$4 np=$5 check=${6:-}
work=$(mktemp -d /tmp/pgshift-pooler.XXXXXX) || exit 1
trap 'rm -rf "$work"' EXIT
printf '%s\t\n' "$file" >"$work/queue"
if [ "$check" = stage ]; then : >"$file.pgshift-staged" || exit 1; fi
i=0
while [ "$i" -lt 20 ]; do
  i=$((i + 1))
  line=$(sed -n "${i}p" "$work/queue")
  [ -n "$line" ] || break
  f=${line%%	*} sec=${line#*	}
  [ -r "$f" ] || { echo "cannot read $f" >&2; exit 1; }
  awk -v oh="$oh" -v op="$op" -v nh="$nh" -v np="$np" -v sec="$sec" -v dir="$(dirname "$f")" \
    -v incl="$work/incl" -v names="$work/names" '
    /^[ \t]*%include[ \t]/ {
      p = $0; sub(/^[ \t]*%include[ \t]+/, "", p); sub(/[ \t]+$/, "", p)
      if (p !~ /^\//) p = dir "/" p
      print p "\t" sec >> incl
      print; next
    }
    /^[ \t]*\[/ { s = $0; gsub(/[ \t\[\]]/, "", s); sec = tolower(s); print; next }
    sec == "databases" && $0 !~ /^[ \t]*[;#]/ && index($0, "=") > 0 {
      eq = index($0, "="); name = substr($0, 1, eq - 1); rest = substr($0, eq + 1)
      n = split(rest, t, /[ \t]+/); h = ""; p = ""
      for (k = 1; k <= n; k++) {
        if (t[k] ~ /^host=/) h = substr(t[k], 6)
        if (t[k] ~ /^port=/) p = substr(t[k], 6)
      }
      if (p == "") p = "5432"
      if (h == oh && p == op) {
        out = ""; hasport = 0
        for (k = 1; k <= n; k++) {
          if (t[k] == "") continue
          if (t[k] ~ /^host=/) t[k] = "host=" nh
          else if (t[k] ~ /^port=/) { t[k] = "port=" np; hasport = 1 }
          out = out (out == "" ? "" : " ") t[k]
        }
        if (!hasport) out = out " port=" np
        nm = name; gsub(/[ \t]/, "", nm); print nm >> names
        print name "= " out; next
      }
    }
    { print }' "$f" >"$work/new" || exit 1
  if [ -s "$work/names" ]; then
    printf '%s\t%s\t%s\n' "$f" "$(wc -l <"$work/names" | tr -d ' ')" "$(paste -sd, "$work/names")"
    if [ "$check" = stage ]; then
      cp -p "$f" "$f.pgshift-base" && cat "$work/new" >"$f.pgshift-next" || exit 1
      chmod --reference="$f" "$f.pgshift-next" 2>/dev/null || true
      printf '%s\n' "$f" >>"$file.pgshift-staged" || exit 1
    elif [ -z "$check" ]; then
      cp -p "$f" "$f.pgshift-prev" || exit 1
      cat "$work/new" >"$f.pgshift-new" || exit 1
      chmod --reference="$f" "$f.pgshift-new" 2>/dev/null || true
      sync "$f.pgshift-new" 2>/dev/null || true
      mv -f "$f.pgshift-new" "$f" || exit 1
    fi
    rm -f "$work/names"
  fi
  [ -f "$work/incl" ] && cat "$work/incl" >>"$work/queue" && rm -f "$work/incl"
done
exit 0

# pgshift-pooler-swap FILE: put in place what pooler-entries.sh staged for the PgBouncer
# configuration FILE (the files listed in FILE.pgshift-staged): each FILE.pgshift-next renamed
# over its file (atomic), the old one kept as FILE.pgshift-prev. Nothing is moved when a file
# changed since it was staged (it differs from its .pgshift-base): exit 4, the staged
# files removed; nothing staged:
# exit 3; a failed write: exit 1. Runs as the owner of the files.
list=$1.pgshift-staged
[ -s "$list" ] || exit 3
stale=0
while IFS= read -r f; do
  if ! cmp -s "$f" "$f.pgshift-base" || [ ! -f "$f.pgshift-next" ]; then stale=1; fi
done <"$list"
if [ "$stale" = 1 ]; then
  # What was staged goes (the caller rewrites the files as they are now).
  while IFS= read -r g; do rm -f "$g.pgshift-next" "$g.pgshift-base"; done <"$list"
  rm -f "$list"
  exit 4
fi
while IFS= read -r f; do
  cp -p "$f" "$f.pgshift-prev" && mv -f "$f.pgshift-next" "$f" || exit 1
  rm -f "$f.pgshift-base"
done <"$list"
rm -f "$list"
exit 0

# pgshift-unfence PGDATA
# Undo the fence of a stopped cluster: remove standby.signal (so it starts as a primary) and
# any promote signal, durably. The primary_conninfo line stays: a primary ignores it.
d=$1
rm -f "$d/standby.signal" "$d/promote" && sync "$d"

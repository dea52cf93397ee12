#!/bin/bash
# Alternates the scripts named (default: all four), three rounds, on fresh tables; prints
# transactions/s and the machine's busy CPU per delivery (µs).
cd "$(dirname "$0")"
psql -h 127.0.0.1 -U postgres -d test -q -f setup.sql
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
scripts=${*:-current attempt-folded pending-table written-once}
for round in 1 2 3; do for s in $scripts; do
  psql -h 127.0.0.1 -U postgres -d test -qc "TRUNCATE pa.d, pa.att, pb.d, pb.q, pc.q, pc.d"
  b0=$(busy)
  tps=$(pgbench -h 127.0.0.1 -U postgres -n -c 2 -j 1 -T 15 -f "$s.sql" test 2>&1 | grep -oP 'tps = \K[0-9.]+')
  b1=$(busy)
  echo "$s tps=$tps us_per_delivery=$(echo "scale=1; ($b1-$b0)*10000/($tps*50*15)" | bc)"
done; done

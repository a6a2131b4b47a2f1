#!/usr/bin/env bash
# Peak memory and time of translating spreadsheet exports of growing size
# (CSV → canonical v2, JSON lines), to show memory stays flat as the file grows.
# Usage: benches/csv-memory.sh [ROWS ...]   (default: 10000 100000 400000)
set -euo pipefail
cd "$(dirname "$0")/.."

rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(10000 100000 400000)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --locked --quiet
binary=${CARGO_TARGET_DIR:-target}/release/passerelle

printf '%10s %12s %12s %14s\n' rows bytes "peak RSS KB" "rows/s"
for count in "${rows[@]}"; do
  file="$work/export-$count.csv"
  # Synthetic rows in the shape of samples/association-export-cdb.csv (same header).
  head -n 1 samples/association-export-cdb.csv > "$file"
  awk -v n="$count" 'BEGIN {
    for (i = 1; i <= n; i++) {
      printf "GEN-%07d;Prénom%d;Nom%d;%02d/%02d/19%02d;;06 12 34 56 78;p%d@example.org;93200;Saint-Denis;1234567;01234567891;Oui;Non;\"numerique;mobilite\";Souhaite découvrir les métiers du numérique;Konexio Saint-Denis;claire.martin@konexio.example\r\n",
        i, i, i, (i % 28) + 1, (i % 12) + 1, (i % 80) + 10, i
    }
  }' >> "$file"
  start=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$work/rss" "$binary" translate --from csv \
    --mapping config/mappings/carnet-de-bord.toml --to passerelle-v2 \
    --sender 81234567800013 --recipient 13000548100002 --now 2026-12-01T09:00:00Z \
    "$file" > /dev/null
  end=$(date +%s.%N)
  rate=$(awk -v n="$count" -v s="$start" -v e="$end" 'BEGIN { printf "%.0f", n / (e - s) }')
  printf '%10d %12d %12d %14s\n' "$count" "$(stat -c %s "$file")" "$(cat "$work/rss")" "$rate"
done

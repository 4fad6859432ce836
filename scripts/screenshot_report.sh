#!/usr/bin/env bash
# Render an audit's report.html in headless Chromium (Debian's `chromium` package) and save a
# full-page PNG beside it, to look at what a reader sees. Usage: scripts/screenshot_report.sh RUN_DIR
set -euo pipefail
run_dir=${1:?usage: scripts/screenshot_report.sh RUN_DIR}
report="$(cd "$run_dir" && pwd)/report.html"
[ -f "$report" ] || { echo "no report.html in $run_dir (run unlearn-lens audit or report first)" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium is not installed: apt-get install chromium" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# --no-sandbox: CI runs as root; the networking flags keep an offline machine from stalling.
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --window-size=1280,4000 --hide-scrollbars \
  --screenshot="$run_dir/report.png" "file://$report" 2>/dev/null
echo "$run_dir/report.png"

#!/usr/bin/env bash
# Render an audit's report.html in headless Chromium (Debian's `chromium` package) and save a
# PNG of its first screens at a laptop's 1366 px width, to look at what a reader sees.
# Usage: scripts/screenshot_report.sh RUN_DIR [PNG]   (default RUN_DIR/report.png)
# The getting-started page's screenshot: scripts/screenshot_report.sh runs/audit docs/figures/report.png
set -euo pipefail
run_dir=${1:?usage: scripts/screenshot_report.sh RUN_DIR [PNG]}
png=${2:-$run_dir/report.png}
report="$(cd "$run_dir" && pwd)/report.html"
[ -f "$report" ] || { echo "no report.html in $run_dir (run unlearn-lens audit or report first)" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium is not installed: apt-get install chromium" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# --no-sandbox: CI runs as root; the networking flags keep an offline machine from stalling.
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --window-size=1366,2400 --hide-scrollbars \
  --screenshot="$(realpath -m "$png")" "file://$report" 2>/dev/null
echo "$png"

#!/usr/bin/env bash
# ensure-chromium.sh - Debian's headless Chromium for the MLflow UI browser test (tests/evaluate/test_mlflow_ui.py).
#
# Debian 12, run as root. Idempotent: installs only the missing packages (chromium, and fonts-liberation so the
# page's text renders), prints the browser's path and exits 0 when it is present. Without root or apt-get and
# without the packages it exits 3 saying what to install. The packages stay installed: unlike a stopped SLURM,
# an unused browser slows nothing down.
#
#   scripts/ensure-chromium.sh            install if needed, print the chromium path
#   scripts/ensure-chromium.sh --check    exit 0 if present, 3 if not (installs nothing)
set -euo pipefail

PACKAGES=(chromium fonts-liberation)

say() { echo "ensure-chromium: $*" >&2; }

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

case "${1:-install}" in
  --check)
    ((${#missing[@]} == 0)) && command -v chromium && exit 0
    say "missing: ${missing[*]:-chromium binary}"
    exit 3
    ;;
  install) ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    say "missing packages (${missing[*]}); installing them needs root and apt-get: apt-get install ${missing[*]}"
    exit 3
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v chromium || { say "chromium installed but not on PATH"; exit 3; }

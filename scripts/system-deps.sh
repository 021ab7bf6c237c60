#!/usr/bin/env bash
# System packages the end-to-end tests need: Chromium (the annotation page in a real
# browser, driven by Playwright) and PostgreSQL (concurrent votes on a real server).
# Installs them with apt-get when missing and allowed; otherwise says what to install.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} for the end-to-end tests (apt-get)"
  apt-get install -y -q "${missing[@]}" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
else
  echo "the end-to-end tests need: ${missing[*]} (Debian/Ubuntu: sudo apt-get install ${missing[*]});" \
       "run \`make test-unit\` to test without them" >&2
  exit 1
fi

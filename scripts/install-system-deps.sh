#!/usr/bin/env bash
# Install Debian packages the project uses: graphviz (the model plot), chromium and its driver (the
# plots page and the service's browser test), Java 17 (the Spark engine).
# Needs root and apt-get; elsewhere it says what to install by hand and exits 0, because each is optional.
set -u
missing=()
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: please install ${missing[*]} (e.g. sudo apt-get install ${missing[*]})" >&2
  exit 0
fi
echo "installing ${missing[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null \
  || echo "warning: apt-get could not install ${missing[*]}; the pipeline runs without them" >&2

#!/usr/bin/env bash
# Makes Baïkal, the third upstream of the integration tests, runnable here:
# its kit (../shared/upstreams/baikal/start.sh beside the repository, or
# $BAIKAL_DIR/start.sh) and PHP with the extensions Baïkal needs. Missing PHP
# packages are installed with apt-get when running as root (CI); otherwise this
# says what is missing. Exits 0 either way, unless BAIKAL_REQUIRED=1: then a
# missing kit or PHP is an error (the tests would fail on it too).
set -euo pipefail
cd "$(dirname "$0")/.."
kit="${BAIKAL_DIR:-$PWD/../shared/upstreams/baikal}"
required="${BAIKAL_REQUIRED:-}"
[ "$required" = 0 ] && required=""
packages=(php-cli php-sqlite3 php-xml php-mbstring)

missing() {
  echo "baikal-deps: $*; the Baïkal tests will be skipped" >&2
  if [ -n "$required" ]; then
    echo "baikal-deps: BAIKAL_REQUIRED is set: failing" >&2
    exit 1
  fi
  exit 0
}

php_ok() {
  command -v php >/dev/null 2>&1 &&
    php -r 'exit(extension_loaded("pdo_sqlite") && extension_loaded("xml") && extension_loaded("mbstring") ? 0 : 1);' 2>/dev/null
}

[ -x "$kit/start.sh" ] || missing "no Baïkal kit at $kit (set BAIKAL_DIR)"
if ! php_ok; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "baikal-deps: installing ${packages[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${packages[@]}" >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && apt-get install -y -qq "${packages[@]}" >/dev/null; } ||
      missing "apt-get install ${packages[*]} failed"
  fi
  php_ok || missing "PHP with pdo_sqlite, xml and mbstring not found (apt-get install ${packages[*]})"
fi
echo "baikal-deps: Baïkal kit at $kit, $(php -r 'echo "PHP ", PHP_VERSION;')" >&2

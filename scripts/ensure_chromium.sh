#!/usr/bin/env bash
# Debian's Chromium for the web console's browser tests: Playwright drives /usr/bin/chromium and
# never downloads a browser (none can be fetched here). Installed with apt-get when missing and
# possible (root); otherwise say how, since tests/integration/test_console_browser.py needs it.
set -uo pipefail
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium (apt-get; log in /tmp/chromium-apt.log)..." >&2
  if (DEBIAN_FRONTEND=noninteractive timeout 300 apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends chromium) \
      >/tmp/chromium-apt.log 2>&1; then
    exit 0
  fi
fi
echo "error: /usr/bin/chromium is missing and could not be installed: run" \
     "'apt-get install -y chromium' (tests/integration/test_console_browser.py needs it)" >&2
exit 1

"""Debian's Chromium for the browser tests (Playwright's own browser download fails here)."""

CHROMIUM = "/usr/bin/chromium"
# As the machine's probe starts it: headless, as root, with no background traffic to a closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

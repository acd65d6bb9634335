"""An empty mitmproxy script: the baseline for what loading any `-s` script costs mitmproxy."""

addons: list[object] = []

"""mitmproxy script: ``mitmdump -s addon/expect_ct_addon.py`` (or ``-s "$(python -m expect_ct)"``)."""

from expect_ct.addon import ExpectCT

addons = [ExpectCT()]

if __name__ == "__main__":
    # For substitution into the mitmproxy command line, like mitmproxy-HTTPolice does.
    print(__file__)

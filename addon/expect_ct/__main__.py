"""`python -m expect_ct`: with no arguments, print the path of the mitmproxy script."""

from expect_ct.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

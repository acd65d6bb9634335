"""The mitmproxy glue of the addon, by concern; ``expect_ct.addon.ExpectCT`` ties it together.

options (declarations and checks), connections (per-connection state and handshake
capture), judging (evaluating and deciding each upstream connection), headers (the Expect-CT
response header), reporting (violation reports and the event log), annotate (what flows show
users), commands, export, faults (errors logged once), inputs (log list and roots from the
options), knownhosts (the store), launch (mitmdump and mitmweb with the addon built in).
"""

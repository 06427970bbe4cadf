"""Web environments: MiniWoB++ task pages driven by Playwright on the system Chromium.

Import the submodules directly; this package stays light on purpose:
`browser` (one Chromium on its own asyncio thread), `miniwob` (the task page env, async, with a
blocking facade), `observation` (what the policy sees), `actions` (the action grammar),
`slot` (an env slot that survives crashed and hung pages), `miniwob_js` (the page-side code).
"""

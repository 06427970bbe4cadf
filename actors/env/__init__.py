"""Web environments: MiniWoB++ task pages driven by Playwright on the system Chromium.

Import the submodules directly (`actors.env.miniwob`, `actors.env.browser`, `actors.env.actions`);
this package stays light on purpose.
"""

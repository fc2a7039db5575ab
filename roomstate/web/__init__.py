"""The web view: pages for people, a JSON API and metrics for tools, behind the plugin's own
sign-in (maubot's plugin web app authenticates nothing)."""

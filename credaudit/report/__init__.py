"""The credibility report: its model and its renderings (JSON, Markdown, terminal)."""

"""Dashboard pages: each file renders one page and holds no logic."""

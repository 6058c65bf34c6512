"""The clinmm clinician dashboard (Streamlit), shipped inside the wheel.

``streamlit_app.py`` is the entry point (``st.navigation`` over ``app_pages/``); ``settings.py`` reads what
``clinmm dashboard`` passes after ``--``; the other modules hold the logic the pages render.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["APP_DIR", "APP_PATH"]

APP_DIR = Path(__file__).resolve().parent
APP_PATH = APP_DIR / "streamlit_app.py"

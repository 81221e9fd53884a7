"""Shared test helpers: reference code (refs) and tiny random-weight models written in the real file formats."""

"""The renderer: turns telemetry, prices and plans into Plotly figures and serves the live dashboard."""

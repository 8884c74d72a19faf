"""Colouring heatmaps, overlays, figures, layer strips and the HTML report."""

"""Pictures and plots of a model's work.

- `pictures`: sample grids, inpaintings, GIFs of the canvas through time and attention boxes
  (torchvision, Pillow);
- `plots`: the KL per step and learning curves as matplotlib Figures (the optional extra
  ``drawzoo[plots]``), saved as PNG, SVG or PDF by the file's suffix.
"""

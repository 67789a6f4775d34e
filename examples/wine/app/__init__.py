"""The wine classifier's serving app: stdlib only, so the image needs nothing but python3."""

// placeholder until the overlay lands

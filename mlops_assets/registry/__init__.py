"""Registry: finding and loading the model version behind an alias."""

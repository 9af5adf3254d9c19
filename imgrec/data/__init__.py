"""Reading image folders and feeding them to models."""

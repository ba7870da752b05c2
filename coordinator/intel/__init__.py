"""Order intelligence (issue 15): order-history import and the health report, return
reasons classified and learned from corrections, and self-healing adapters (address
correction through a geocoder, stuck parcels handed to a backup carrier)."""

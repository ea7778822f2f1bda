"""GPS fix sources for the field client (NMEA 0183, gpsd, a route simulator), fix filters and the
recorder that puts accepted fixes into the local outbox."""

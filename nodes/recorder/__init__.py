"""The recorder: stores every data message in InfluxDB, at least once, and answers history requests."""

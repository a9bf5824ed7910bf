"""The price feed: day-ahead style PriceForecasts from a CSV or a bundled synthetic series."""

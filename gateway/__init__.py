"""HTTP/JSON and a search page in front of a running search service (`ris gateway`)."""

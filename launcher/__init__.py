"""Both services in one process for `ris serve` and `ris demo`: the only room that imports them."""

//! Text form (printer and parser): placeholder replaced below.

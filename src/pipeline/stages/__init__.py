"""One module per stage; :mod:`pipeline.run` dispatches to them."""

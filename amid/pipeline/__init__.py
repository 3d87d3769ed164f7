"""The road one message travels, a module per stage.

receive (`source`) -> decode -> dedupe (`amid.store`) -> enrich -> route
(`routing`, `patterns`) -> deliver -> acknowledge (`source`);
`process.Pipeline.process` calls them in that order.
"""

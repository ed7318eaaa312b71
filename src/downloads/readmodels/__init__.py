"""The read side: projections of the feed into read models, and the title-withdrawal process manager."""

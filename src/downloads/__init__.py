"""downloads: license accounting for offline downloads, on eskit."""

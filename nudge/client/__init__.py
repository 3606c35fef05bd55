"""Client-side tools: the score client, the load generator, the feature-path bench, the
process watcher, client credentials. They talk to a server over gRPC and never import it."""

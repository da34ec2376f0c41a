"""The cluster agent: runs on a head node, pulls its cluster's next workset from the API, runs it, reports back."""

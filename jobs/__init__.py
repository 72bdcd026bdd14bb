"""Ray programs that wire nla/ into Ray: the labeling job (Ray Data). Training jobs (Ray Train) join with issue 7."""

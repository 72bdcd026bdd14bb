"""Ray programs that wire nla/ into Ray: labeling (Ray Data), teaching, training (Ray Train) and the retrain loop;
entry.py is how each one's main() ends."""

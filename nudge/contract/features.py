"""The feature services each model reads (defined in feature_repo/definitions.py): training
asks Feast for them to build training sets and records them in the manifest; serving and the
feature-path bench read them online."""

PROPENSITY_SERVICE = "propensity_v1"
SEND_TIME_SERVICE = "send_time_v1"
SERVICES = (PROPENSITY_SERVICE, SEND_TIME_SERVICE)
# Channel sends and rates, the open interest and the decide time: the best channel and
# decide-time reminders (issue 12). No model is trained on it, so it is not in SERVICES (the
# models' services, whose union `nudge bench features` reads).
ENGAGEMENT_SERVICE = "engagement_v1"
# The two feature views the pipeline writes and both models read (feature_repo/definitions.py).
STATS_VIEW = "customer_stats"
HISTOGRAMS_VIEW = "customer_time_histograms"

"""What reads the predictions topic: the typed subscriber (`subscribe`), the RL
observation and environment (`rl`) and the alerting consumer (`alerts`)."""

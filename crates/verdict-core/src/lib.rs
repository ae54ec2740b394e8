//! Pure domain core of verdict: events, the Experiment aggregate and GrowthBook-exact assignment.

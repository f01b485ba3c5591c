"""The models group: the churn classifier and the member segmentation, each a candidate behind blocking
gates and a promoted champion, with the promotion and champion metadata they share."""

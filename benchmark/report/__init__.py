"""Tables and figures of the paper, from a results folder, with the published numbers beside ours."""

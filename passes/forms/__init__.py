"""Forms: the graphs a pass builds for one op where it has several to choose from (a max pool as
smaller pools, as running maxes from depthwise or dense convs; a large kernel as stacked 3x3 convs or
as partial sums; a grouped conv as split convs). Each file states its maths and builds; the pass in
`passes/` that owns the op registers the rewrite and picks the form by the target's cost."""

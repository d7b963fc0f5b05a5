module github.com/leanshim/leanshim/bench

go 1.26.0

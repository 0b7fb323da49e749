"""Research workflows around the fit: ablations across balancing methods, loss landscapes."""

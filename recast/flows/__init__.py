"""recast.flows"""

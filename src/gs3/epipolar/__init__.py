"""epipolar"""
